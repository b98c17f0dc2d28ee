"""Hide /sys/fs/selinux in the current (already unshared) mount namespace, then exec a command.

usage: unshare -m --propagation private -- python3 hide_selinuxfs.py tmpfs|readonly -- ARGV...

tmpfs:    an empty tmpfs over /sys/fs/selinux (a container that does not mount it);
readonly: selinuxfs remounted read-only (how container runtimes hide SELinux; libselinux then
          says SELinux is disabled and util-linux drops context= options).
"""

from __future__ import annotations

import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or argv[0] not in ("tmpfs", "readonly"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "tmpfs":
        hide = ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", "/sys/fs/selinux"]
    else:
        hide = ["mount", "-o", "remount,bind,ro", "/sys/fs/selinux"]
    subprocess.run(hide, check=True)
    os.execvp(argv[2], argv[2:])  # noqa: S606 - the argv comes from the test, not from input


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
