"""Adapter for the IPFS Cluster REST API (https://ipfscluster.io/documentation/reference/api/).

Used when ``cluster.url`` is set in the content config: pinned CIDs are also
pinned in the cluster with ``replication-min``/``replication-max`` so the
cluster keeps that many copies on its IPFS peers.  Endpoints used::

    POST   /pins/{cid}?replication-min=N&replication-max=M&name=NAME
    DELETE /pins/{cid}
    GET    /pins/{cid}            (status per cluster peer)
    GET    /id                    (reachability)

Auth: basic auth (``user``/``password``) or a bearer ``token``, as the cluster's
``restapi`` section configures.
"""
from __future__ import annotations

from typing import Any

import httpx

from webaccel.content import cid as cidmod
from webaccel.content.errors import ReplicationError


class ClusterClient:
    def __init__(self, url: str, *, token: str | None = None, user: str | None = None,
                 password: str | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        auth = httpx.BasicAuth(user, password or "") if user else None
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, auth=auth,
                                         timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ReplicationError(
                f"IPFS Cluster at {self._client.base_url} is unreachable") from exc
        if r.status_code >= 400:
            raise ReplicationError(
                f"IPFS Cluster answered {r.status_code} to {method} {path.split('?')[0]}",
                details={"status": r.status_code, "body": r.text[:500]})
        return r.json() if r.content else None

    async def pin(self, cid: cidmod.CIDLike, *, replication_min: int = -1,
                  replication_max: int = -1, name: str | None = None) -> Any:
        params: dict[str, Any] = {"replication-min": replication_min,
                                  "replication-max": replication_max}
        if name:
            params["name"] = name
        text = cidmod.to_str(cidmod.parse(cid))
        return await self._call("POST", f"/pins/{text}", params=params)

    async def unpin(self, cid: cidmod.CIDLike) -> Any:
        return await self._call("DELETE", f"/pins/{cidmod.to_str(cidmod.parse(cid))}")

    async def status(self, cid: cidmod.CIDLike) -> Any:
        return await self._call("GET", f"/pins/{cidmod.to_str(cidmod.parse(cid))}")

    async def id(self) -> Any:
        return await self._call("GET", "/id")
