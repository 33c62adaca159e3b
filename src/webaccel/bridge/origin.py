"""The fixed origin launched browsers reach the server under.

Browser storage (OPFS, where pages cache model bytes by CID) belongs to an origin,
and an origin includes the port: a server on a fresh port each run would find every
persistent profile's cache empty (and fill it again, once per port). Launched
Chromiums reach the server under this fixed name instead (a host-resolver rule maps
it to the real address); ``*.localhost`` is a secure context and never leaves the host.
"""

STABLE_HOST = "webaccel.localhost"
STABLE_ORIGIN = f"http://{STABLE_HOST}"
