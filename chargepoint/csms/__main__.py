"""Run the local Central System standalone: ``python -m chargepoint.csms --port 9000``.

Prints one readable line per message until Ctrl-C (or SIGTERM), then stops cleanly.
"""
from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading

from chargepoint.csms.server import LocalCsms


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chargepoint.csms",
        description="Local OCPP 1.6-J Central System for demos and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port (default 9000; 0 = any free port)")
    parser.add_argument("--path-prefix", default="/ocpp", help="URL path before /<chargePointId> (default /ocpp)")
    parser.add_argument("--heartbeat", type=int, default=300, metavar="SECONDS",
                        help="heartbeat interval given in BootNotification.conf (default 300)")
    parser.add_argument("--quiet", action="store_true", help="print only the listening address")
    parser.add_argument("--log-path", metavar="FILE", help="append every message as a JSON line to FILE")
    parser.add_argument("--basic-auth", action="append", default=[], metavar="ID:PASSWORD",
                        help="require HTTP Basic auth; repeat for each charge point")
    parser.add_argument("--certfile", help="serve wss:// with this PEM certificate chain")
    parser.add_argument("--keyfile", help="private key for --certfile (if not inside it)")
    parser.add_argument("--client-ca", metavar="PEM", help="require client certificates signed by this CA")
    args = parser.parse_args(argv)
    if args.client_ca and not args.certfile:
        parser.error("--client-ca needs --certfile")
    for item in args.basic_auth:
        if ":" not in item:
            parser.error(f"--basic-auth expects ID:PASSWORD, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Every CALLERROR would otherwise come with a traceback; the printed summary says enough.
    logging.getLogger("chargepoint.csms.ocpp").setLevel(logging.CRITICAL)

    context = None
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
        if args.client_ca:
            context.load_verify_locations(args.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    basic_auth = dict(item.split(":", 1) for item in args.basic_auth) or None

    def printer(line: str) -> None:
        print(line, flush=True)

    csms = LocalCsms(
        args.host, args.port, ssl_context=context, basic_auth=basic_auth, path_prefix=args.path_prefix,
        heartbeat_interval=args.heartbeat, printer=None if args.quiet else printer, log_path=args.log_path,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        csms.start()
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    if args.quiet:
        print(f"Central System listening on {csms.url}/<chargePointId>", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the shutdown
        csms.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
