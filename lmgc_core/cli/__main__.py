"""``python -m lmgc_core.cli``: the ``lmgc`` command, as it was before the CLI became a
package (``python -m lmgc_core`` and ``lmgc`` also tune start-up; this runs it plainly)."""

from lmgc_core.cli.commands import main

if __name__ == "__main__":
    main()
