"""``python -m audit cache info | clear`` : what the cache holds, and deleting it.

- ``cache info [--cache-dir DIR]``: entries, size and age range of each area (features, model outputs,
  analysis steps, ...).
- ``cache clear [--cache-dir DIR] [--older-than DAYS]``: delete every entry, or those written or last used more
  than DAYS ago; prints what was deleted.

Thin: the work is in :mod:`audit.pipeline.cache_admin`.
"""
from __future__ import annotations

import sys
import time

MESSAGE_NO_CACHE = "no cache at {path} (nothing to do)"
MESSAGE_CLEARED = "deleted {entries} cache entries ({size}) from {path}"


def add_parser(subparsers) -> None:
    """Register ``cache`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "cache", help="show or clear the cache of per-image results, model outputs and analysis steps",
        description="The cache (--cache-dir of run; default $IMAGEFAIR_CACHE_DIR or ~/.cache/imagefair) grows with "
                    "every data set audited and is never pruned by run. 'info' shows what it holds; 'clear' "
                    "deletes it, or with --older-than only what no run has written or read for that many days. "
                    "Do not clear a cache that a running audit uses.")
    actions = parser.add_subparsers(dest="cache_action", required=True, metavar="ACTION",
                                    help="info: what the cache holds; clear: delete it")
    info = actions.add_parser("info", help="entries, size and age of each area of the cache",
                              description="Entries, size on disk and age (last written or read by a run) of each "
                                          "area of the cache: features, model outputs, analysis steps, ...")
    clear = actions.add_parser("clear", help="delete cache entries (all, or those unused for --older-than days)",
                               description="Delete the cache's entries: all of them, or with --older-than DAYS those "
                                           "no run has written or read for DAYS days. Only the cache's own files "
                                           "are deleted; symbolic links are never followed.")
    for action in (info, clear):
        action.add_argument("--cache-dir", default=None, metavar="DIR",
                            help="the cache folder (default $IMAGEFAIR_CACHE_DIR or ~/.cache/imagefair)")
    clear.add_argument("--older-than", default=None, metavar="DAYS",
                       help="delete only entries not written or read by a run for more than DAYS days "
                            "(a number, e.g. 30 or 0.5)")
    parser.set_defaults(handler=command_cache)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _age(seconds: float | None, now: float) -> str:
    if seconds is None:
        return "-"
    days = (now - seconds) / 86400.0
    return f"{days:.1f} days" if days >= 1 else f"{(now - seconds) / 3600.0:.1f} hours"


def command_cache(args) -> int:
    from pathlib import Path

    from audit.model.cache import default_cache_dir
    from audit.pipeline.cache_admin import cache_usage, check_older_than, clear_cache

    folder = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    if args.cache_action == "clear":
        check_older_than(args.older_than)  # a bad value is an error even when there is no cache
    if not folder.is_dir():
        print(MESSAGE_NO_CACHE.format(path=folder))
        return 0
    now = time.time()
    if args.cache_action == "info":
        areas = cache_usage(folder, now=now)
        print(f"cache at {folder}")
        width = max(len(a.name) for a in areas)
        for area in areas:
            print(f"  {area.name:<{width}}  {area.entries:>9,} entries  {_size(area.bytes):>9}  "
                  f"last used {_age(area.newest, now)} ago, oldest {_age(area.oldest, now)} ago"
                  if area.entries else f"  {area.name:<{width}}  {0:>9} entries")
        print(f"  {'total':<{width}}  {sum(a.entries for a in areas):>9,} entries  "
              f"{_size(sum(a.bytes for a in areas)):>9}")
        return 0
    result = clear_cache(folder, older_than_days=args.older_than, now=now)
    print(MESSAGE_CLEARED.format(entries=f"{result.total_entries:,}", size=_size(result.total_bytes), path=folder)
          + (f" (kept what a run used within {args.older_than} days)" if args.older_than is not None else ""))
    for area, count in result.entries.items():
        print(f"  {area}: {count:,} ({_size(result.bytes[area])})", file=sys.stdout)
    return 0
