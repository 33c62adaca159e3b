"""The WebSocket bridge: a pure protocol (:mod:`.frames`, :mod:`.session`) and its driver."""
