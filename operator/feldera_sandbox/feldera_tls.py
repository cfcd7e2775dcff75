"""https for the Feldera emulator: a throwaway CA and a serving certificate, good or bad on purpose.

`server_tls(mode)` issues, from a fresh CA (`certs.CertificateAuthority`), a certificate for the
address served on and `localhost` (`valid`), one that expired yesterday (`expired`), or a valid
one whose names are only `feldera.invalid` (`wrong-host`), so that a client verifying against the
CA sees each TLS failure for its own reason. `ca_pem` is what the client should trust. With
`cert_file`/`key_file`, those are served as they are and there is no CA to hand out.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from feldera_sandbox.certs import CertificateAuthority, Issued

__all__ = ["TLS_MODES", "ServerTls", "TlsMode", "server_tls"]

TlsMode = Literal["valid", "expired", "wrong-host"]
TLS_MODES: tuple[TlsMode, ...] = ("valid", "expired", "wrong-host")


@dataclass(frozen=True)
class ServerTls:
    """The server side of https: its SSL context, and the CA's PEM when the emulator made one."""

    context: ssl.SSLContext
    ca_pem: bytes | None
    mode: TlsMode = "valid"


def _names(host: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    ips: list[str] = ["127.0.0.1", "::1"]
    dns: list[str] = ["localhost"]
    try:
        address = str(ipaddress.ip_address(host))
        if address not in ips and not ipaddress.ip_address(host).is_unspecified:
            ips.append(address)
    except ValueError:
        if host not in dns:
            dns.append(host)
    return tuple(ips), tuple(dns)


def _issue(ca: CertificateAuthority, mode: TlsMode, host: str) -> Issued:
    if mode == "wrong-host":
        return ca.issue("feldera.invalid", dns=("feldera.invalid",), server=True)
    ips, dns = _names(host)
    if mode == "expired":
        now = dt.datetime.now(dt.UTC)
        return ca.issue(
            "feldera-emulator",
            ips=ips,
            dns=dns,
            server=True,
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        )
    return ca.issue("feldera-emulator", ips=ips, dns=dns, server=True)


def server_tls(
    mode: TlsMode = "valid",
    *,
    host: str = "127.0.0.1",
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ServerTls:
    if mode not in TLS_MODES:
        raise ValueError(f"TLS mode must be one of {', '.join(TLS_MODES)}, not {mode!r}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
        return ServerTls(context, None, mode)
    if key_file is not None:
        raise ValueError("a key file needs its certificate file")
    ca = CertificateAuthority("feldera-emulator-ca")
    issued = _issue(ca, mode, host)
    # The ssl module reads certificates from files only: a private directory, gone at once.
    with tempfile.TemporaryDirectory(prefix="feldera-emulator-tls-") as directory:
        crt, key = issued.write(Path(directory), "server")
        context.load_cert_chain(crt, key)
    return ServerTls(context, ca.cert_pem, mode)
