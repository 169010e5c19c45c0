"""Send a test fax to a running t38gw from a real SpanDSP T.38 terminal on this machine.

    .venv/bin/python tools/send_test_fax.py                      # a generated test page
    .venv/bin/python tools/send_test_fax.py letter.pdf scan.tif  # your own documents
    .venv/bin/python tools/send_test_fax.py --gateway 127.0.0.1:5060 --mode audio-wait --no-ecm

The SIP side is the hand-written test caller of ``tests/e2e/farend.py`` (UDP from
127.0.0.1); the fax side is SpanDSP (Debian ``libspandsp2``, which ``make test``
installs).  It prints what happened and exits 0 when SpanDSP reports the fax sent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imaging import DocumentError  # noqa: E402
from imaging.documents import load_document  # noqa: E402

WIDTH = 1728
X_DPI, Y_DPI = 204, 196


def test_page() -> tuple[bytes, int, int]:
    """An A4 page with a heading, a frame and a line pattern, drawn with Pillow."""
    from PIL import Image, ImageDraw

    height = 2200
    image = Image.new("1", (WIDTH, height), 1)
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, WIDTH - 40, height - 40), outline=0, width=6)
    for size, y, text in ((72, 120, "t38gw test fax"), (36, 260, "If you can read this, it arrived.")):
        try:
            from PIL import ImageFont
            font = ImageFont.load_default(size=size)
        except (TypeError, OSError):
            font = None
        draw.text((120, y), text, fill=0, font=font)
    for i in range(0, 600, 12):
        draw.line((120, 500 + i, WIDTH - 120, 500 + i + i // 6), fill=0, width=2)
    bitmap = bytes(b ^ 0xFF for b in image.tobytes())  # Pillow "1": 1 = white; ours: 1 = black
    return bitmap, WIDTH, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="PDF, TIFF, PNG or JPEG files (default: a generated test page)")
    parser.add_argument("--gateway", default="127.0.0.1:5060", help="the gateway's SIP UDP address (default %(default)s)")
    parser.add_argument("--to", default="5550100", help="the number to call (Request-URI user)")
    parser.add_argument("--mode", choices=["t38", "audio-wait", "audio-reinvite"], default="t38",
                        help="T.38 in the first INVITE (default), audio and wait for the gateway's re-INVITE, "
                             "or audio and re-INVITE to T.38 ourselves")
    parser.add_argument("--no-ecm", action="store_true", help="send without error correction mode")
    args = parser.parse_args(argv)
    host, _, port = args.gateway.rpartition(":")
    if not port.isdigit():
        parser.error("--gateway must be HOST:PORT")

    from tests.e2e.farend import CallPlan, FarEnd
    from tests.peers.spandsp import T30_ERROR_NAMES, T30_ERR_OK, PeerMissing

    pages = []
    try:
        for name in args.files:
            pages += [(p.bitmap, p.width, p.height) for p in load_document(name, x_dpi=X_DPI, y_dpi=Y_DPI, width=WIDTH)]
    except DocumentError as error:
        print(f"send_test_fax: {error}", file=sys.stderr)
        return 2
    if not pages:
        pages = [test_page()]
    plan = CallPlan(pages=pages, x_dpi=X_DPI, y_dpi=Y_DPI, ecm=not args.no_ecm, mode=args.mode, did=args.to,
                    max_seconds=60 + 45 * len(pages))
    print(f"calling sip:{args.to}@{host}:{port} with {len(pages)} page(s), mode {args.mode}, "
          f"ECM {'off' if args.no_ecm else 'on'} ...", flush=True)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            result = FarEnd((host, int(port)), plan, Path(workdir)).run()
    except PeerMissing as error:
        print(f"send_test_fax: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"send_test_fax: cannot reach the gateway: {error}", file=sys.stderr)
        return 1
    status = result.phase_e_status
    print(f"SIP answer: {result.invite_status}; fax result: "
          f"{T30_ERROR_NAMES.get(status, status) if status is not None else 'none (call did not reach T.30 phase E)'}; "
          f"pages confirmed: {result.pages_sent_confirmed}; {result.seconds:.1f} s"
          + (f"; error: {result.error}" if result.error else ""))
    return 0 if status == T30_ERR_OK else 1


if __name__ == "__main__":
    sys.exit(main())
