"""The server name a TLS ClientHello asks for, read before a tunnel opens.

A CONNECT tunnel that is passed through (no inspection) must still not reach
a name other than the one it was allowed for: on an address that serves many
names (a CDN), `CONNECT allowed.example:443` followed by a ClientHello for
`other.example` would reach `other.example` (domain fronting). So the proxy
reads the sandbox's first bytes, and sends nothing upstream until the
ClientHello's SNI names the CONNECT host.

The ClientHello is parsed by OpenSSL, not by hand: the bytes go into a
server-side ``SSLObject`` over memory BIOs whose SNI callback records the
name and aborts the handshake. Nothing is answered to the client and no key
is involved; OpenSSL only reads the hello. What this cannot see: a second
ClientHello after a HelloRetryRequest, a renegotiation, the HTTP Host inside
the TLS (a server that routes by Host rather than SNI can still be fronted),
or the inner hello of Encrypted Client Hello (on a provider whose public name
is the CONNECT host, the inner one can name anything). Inspection
(terminating TLS) is the complete answer to those.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_HELLO_BYTES", "Hello", "read_hello"]

#: A ClientHello larger than this is refused: real ones are well under 2 KiB
#: (a post-quantum key share adds about 1.2 KiB).
MAX_HELLO_BYTES = 16 * 1024


@dataclass(frozen=True)
class Hello:
    """What the first bytes were: ``more`` (not enough yet), ``tls`` (a
    ClientHello; ``server_name`` is its SNI, None without one), or
    ``not_tls`` (not a TLS ClientHello at all)."""

    kind: Literal["more", "tls", "not_tls"]
    server_name: str | None = None


class _Reader:
    """One shared context: the callback keys its answer by the SSLObject,
    and each read is synchronous, so nothing is shared between two reads."""

    def __init__(self) -> None:
        self._seen: dict[int, str | None] = {}
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.sni_callback = self._record

    def _record(self, obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int:
        self._seen[id(obj)] = name
        # Stop here: nothing after the hello is wanted (and no certificate
        # is loaded, so the handshake could not go on anyway).
        return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE

    def read(self, data: bytes) -> Hello:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self._context.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(data)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            return Hello("more")
        except ssl.SSLError:
            pass
        finally:
            name_seen = id(obj) in self._seen
            name = self._seen.pop(id(obj), None)
        return Hello("tls", name) if name_seen else Hello("not_tls")


_READER = _Reader()


def read_hello(data: bytes) -> Hello:
    """Classifies the first bytes a client sent into a CONNECT tunnel."""
    if len(data) > MAX_HELLO_BYTES:
        return Hello("not_tls")
    return _READER.read(data)
