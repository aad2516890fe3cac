"""DTLS 1.2 for coaps:// (RFC 7925: PSK and raw public keys), tinydtls driven through ctypes.

tinydtls is the C library inside DTLSSocket==0.2.3 (pinned exactly: `tinydtls.py` relies on the
layout of its structs, checked against the tinydtls 0.8.6 headers of that release). DTLSSocket's
Cython class offers PSK only and one context per peer; here one tinydtls context serves a whole
socket, with a session per peer address, and the two ECDSA callbacks give raw public keys.
Cipher suites are exactly RFC 7925's: TLS_PSK_WITH_AES_128_CCM_8 and
TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (P-256). Fleet implements no cryptography itself.

Every tinydtls call and callback runs synchronously on the event loop: the library is not
thread-safe, and its callbacks (key lookups included) must not await. `server.py` is the
coaps socket's side (protocols.coap.secure puts it in the aiocoap context), `client.py` the
device's (simulators, the bench), `identity.py` what both say of a peer.
"""

from protocols.coap.dtls.client import DtlsClient, DtlsClientTransport, open_dtls_endpoint
from protocols.coap.dtls.identity import (DeviceKeys, DtlsError, PeerIdentity, PskCredentials, RpkCredentials,
                                          public_key_xy)
from protocols.coap.dtls.server import DtlsServer
from protocols.coap.dtls.tinydtls import ECDHE_ECDSA_AES_128_CCM_8, PSK_AES_128_CCM_8, TINYDTLS_VERSION

__all__ = ["DeviceKeys", "DtlsClient", "DtlsClientTransport", "DtlsError", "DtlsServer", "ECDHE_ECDSA_AES_128_CCM_8",
           "PSK_AES_128_CCM_8", "PeerIdentity", "PskCredentials", "RpkCredentials", "TINYDTLS_VERSION",
           "open_dtls_endpoint", "public_key_xy"]
