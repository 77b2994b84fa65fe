"""Access to the HTTP API: API keys with scopes, kept hashed in the state store.

Imports the domain and the ports only (the key store is a :class:`tsmeter.ports.KeyStore`
that bootstrap hands the Meter, as ``meter.api_keys``); see ``docs/access.md``.
"""

from tsmeter.access.keys import KEY_PREFIX, ApiKey, ApiKeys, IssuedKey, Scope

__all__ = ["KEY_PREFIX", "ApiKey", "ApiKeys", "IssuedKey", "Scope"]
