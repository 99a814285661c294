"""``tdx-attest-server miner ...``: register miners and issue their API tokens."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tdx_boot_attest.server.clock import Clock, rfc3339
from tdx_boot_attest.server.db.engine import make_engine, make_sessionmaker, session_scope
from tdx_boot_attest.server.fleet.miners import (
    add_miner,
    issue_token,
    list_miners,
    remove_miner,
    revoke_tokens,
)
from tdx_boot_attest.server.settings import Settings


def add_miner_parser(commands: Any) -> None:
    """Add the ``miner`` subcommand to the top-level subparsers. Raises nothing."""
    miner = commands.add_parser("miner", help="miners allowed to use the fleet API")
    miner_commands = miner.add_subparsers(dest="miner_command", required=True)
    add = miner_commands.add_parser("add", help="register a miner hotkey (SS58 address)")
    add.add_argument("hotkey")
    listing = miner_commands.add_parser("list", help="list registered miners")
    listing.add_argument("--json", action="store_true")
    remove = miner_commands.add_parser("remove", help="unregister a miner, revoke its tokens")
    remove.add_argument("hotkey")
    token = miner_commands.add_parser("token", help="per-miner API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    new = token_commands.add_parser("new", help="issue a token (printed once, stored hashed)")
    new.add_argument("hotkey")
    revoke = token_commands.add_parser("revoke", help="revoke every token of a miner")
    revoke.add_argument("hotkey")


def run_miner_command(settings: Settings, args: argparse.Namespace, clock: Clock) -> int:
    """Run a ``miner`` subcommand; returns the exit status.

    Raises RequestInvalid for a malformed hotkey, NotFound for an unknown miner,
    Conflict when removing a miner that still owns servers, and SQLAlchemy errors.
    """
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        return _run(make_sessionmaker(engine), args, clock())
    finally:
        engine.dispose()


def _run(sessions: sessionmaker[Session], args: argparse.Namespace, now: datetime) -> int:
    command = args.miner_command
    if command == "add":
        with session_scope(sessions) as session:
            added = add_miner(session, args.hotkey, now)
        print(f"{'registered' if added else 'already registered'}: miner {args.hotkey}")
        return 0
    if command == "list":
        with session_scope(sessions) as session:
            miners = list_miners(session)
        rows = [
            {
                "hotkey": m.hotkey,
                "created_at": rfc3339(m.created_at),
                "tokens": m.tokens,
                "servers": m.servers,
            }
            for m in miners
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(
                    f"{row['hotkey']}\tcreated={row['created_at']}\t"
                    f"tokens={row['tokens']}\tservers={row['servers']}"
                )
        return 0
    if command == "remove":
        with session_scope(sessions) as session:
            remove_miner(session, args.hotkey)
        print(f"removed miner {args.hotkey} and its API tokens")
        return 0
    action = args.token_command
    if action == "new":
        with session_scope(sessions) as session:
            token = issue_token(session, args.hotkey, now)
        # The one time the token exists outside the caller's hands: it is stored hashed.
        print(token)
        return 0
    with session_scope(sessions) as session:
        revoked = revoke_tokens(session, args.hotkey)
    print(f"revoked {revoked} token(s) of miner {args.hotkey}")
    return 0
