"""``heavy-optimizer init-share``: create the share's folders (safe to run again).

The daemon creates them itself on start; this verb lets an operator prepare a share (and
check its permissions) before the service ever runs, or repair one after someone deleted a
folder from Windows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemon.commands.common import EXIT_OK, add_share_options, command_settings
from daemon.error_handling.errors import ConfigurationError
from daemon.share import ShareLayout


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("init-share", help="create the share's folder layout")
    parser.add_argument("path", nargs="?", type=Path, default=None, metavar="PATH",
                        help="the share root (default: --share, or share_root from the config)")
    add_share_options(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    root = args.path if args.path is not None else command_settings(args).share_root
    root = root.absolute()
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"{root} exists and is not a folder; give the folder that "
                                 "should become the share")
    layout = ShareLayout(root)
    needed = {path for folder in layout.folders()
              for path in (folder, *folder.parents) if root in path.parents}
    for folder in sorted(needed):
        if folder.exists() and not folder.is_dir():
            raise ConfigurationError(f"{folder} is a file where the share needs a folder; "
                                     "move it away and run init-share again")
    missing = [folder for folder in layout.folders() if not folder.is_dir()]
    layout.ensure()
    if not missing:
        print(f"{root} is already set up as a share; nothing to create")
        return EXIT_OK
    print(f"set up {root} as a share; created:")
    for folder in missing:
        print(f"  {folder.relative_to(root)}/")
    return EXIT_OK
