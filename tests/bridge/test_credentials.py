"""Launch credentials and session secrets: the pure rules (webaccel.bridge.credentials)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webaccel.bridge.credentials import (
    SECRET_SUBPROTOCOL_PREFIX,
    CredentialError,
    CredentialStore,
    secret_from_subprotocols,
)
from webaccel.errors import ErrorCode


def test_credential_redeems_once_for_a_secret_bound_to_its_worker():
    store = CredentialStore()
    cred = store.issue("w1", now=100.0)
    assert store.bound("w1") and not store.bound("w2")
    secret = store.redeem("w1", cred, now=101.0)
    assert secret != cred and len(secret) >= 40
    assert store.worker_of(secret) == "w1"
    assert store.worker_of(cred) is None  # the credential is not a secret
    with pytest.raises(CredentialError, match="already redeemed") as info:
        store.redeem("w1", cred, now=102.0)
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert store.worker_of(secret) == "w1"  # a refused replay does not hurt the page


def test_expired_credential_is_refused_and_stays_spent():
    store = CredentialStore(launch_ttl_s=60.0)
    cred = store.issue("w1", now=0.0)
    with pytest.raises(CredentialError, match="expired"):
        store.redeem("w1", cred, now=60.0)
    with pytest.raises(CredentialError, match="already redeemed"):
        store.redeem("w1", cred, now=1.0)
    assert store.bound("w1")  # nobody else may take the id of a page that never came


def test_credential_for_another_worker_is_refused_and_not_consumed():
    store = CredentialStore()
    cred = store.issue("w1", now=0.0)
    with pytest.raises(CredentialError, match="another worker"):
        store.redeem("w2", cred, now=1.0)
    assert store.worker_of(store.redeem("w1", cred, now=2.0)) == "w1"


def test_unknown_or_empty_credential_is_refused():
    store = CredentialStore()
    store.issue("w1", now=0.0)
    for value in ("", "guess", "x" * 43):
        with pytest.raises(CredentialError):
            store.redeem("w1", value, now=1.0)


def test_forget_ends_the_secret_and_unbinds_the_id():
    store = CredentialStore()
    secret = store.redeem("w1", store.issue("w1", now=0.0), now=1.0)
    other = store.redeem("w2", store.issue("w2", now=0.0), now=1.0)
    store.forget("w1")
    assert store.worker_of(secret) is None and not store.bound("w1")
    assert store.worker_of(other) == "w2"


def test_secret_from_subprotocols():
    assert secret_from_subprotocols(["webaccel.v1", SECRET_SUBPROTOCOL_PREFIX + "abc"]) == "abc"
    assert secret_from_subprotocols(["webaccel.v1"]) is None
    assert secret_from_subprotocols([]) is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["issue", "redeem", "replay", "forget"]),
            st.sampled_from(["a", "b", "c"]),
            st.floats(0, 200),
        ),
        max_size=30,
    )
)
def test_any_sequence_keeps_one_redemption_per_credential(ops):
    """Whatever happens, a credential yields at most one secret, only before its
    deadline, and a secret maps to the worker its credential was issued for."""
    store = CredentialStore(launch_ttl_s=60.0)
    issued: list[tuple[str, str, float]] = []
    redeemed: set[str] = set()
    secrets_of: dict[str, str] = {}
    now = 0.0
    for op, worker, dt in ops:
        now += dt
        if op == "issue":
            issued.append((worker, store.issue(worker, now), now))
        elif op in ("redeem", "replay") and issued:
            owner, cred, at = issued[-1] if op == "redeem" else issued[0]
            try:
                secret = store.redeem(owner, cred, now)
            except CredentialError:
                continue
            assert cred not in redeemed and now < at + 60.0
            redeemed.add(cred)
            secrets_of[secret] = owner
        elif op == "forget":
            store.forget(worker)
            secrets_of = {s: w for s, w in secrets_of.items() if w != worker}
            issued = [i for i in issued if i[0] != worker]
        for secret, owner in secrets_of.items():
            assert store.worker_of(secret) == owner
