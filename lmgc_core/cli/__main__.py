"""``python -m lmgc_core.cli``: the ``lmgc`` command, as it was before the CLI became a
package (``python -m lmgc_core`` is the same)."""

from lmgc_core.__main__ import main

if __name__ == "__main__":
    main()
