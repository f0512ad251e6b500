"""``python -m logship``: read shipped logs back from Blob Storage (the account and container of
settings: AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL, LOG_SHIPPING_CONTAINER).

python -m logship list [PREFIX]          the log blobs under PREFIX (e.g. ``web/``), one a line
python -m logship get NAME [-o FILE]     download one (checked against its MD5); FILE: its name
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from logship.account import StorageAccount
from logship.errors import LogShipError
from logship.readback import download_log, list_logs
from settings import SettingsError, get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m logship", description="Read shipped log files back from Blob Storage."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list log blobs (name, size, last modified)")
    listing.add_argument("prefix", nargs="?", default="", help="e.g. web/ or web/host-1/")
    get = commands.add_parser("get", help="download one log blob, checked against its MD5")
    get.add_argument("name", help="the blob name, as `list` prints it")
    get.add_argument("-o", "--output", type=Path, help="where to save it (default: its file name)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        account = StorageAccount.from_settings(settings)
        if account is None:
            raise SettingsError(
                "set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_URL to read logs"
            )
        container = settings.logs_container
        if args.command == "list":
            for entry in list_logs(account, container, args.prefix):
                print(f"{entry.name}\t{entry.size}\t{entry.last_modified.isoformat()}")
        else:
            destination = args.output or Path(args.name.rsplit("/", 1)[-1])
            size = download_log(account, container, args.name, destination)
            print(f"{destination}\t{size}")
    except (SettingsError, LogShipError) as error:
        print(f"python -m logship: {error}", file=sys.stderr)
        return 2
    return 0
