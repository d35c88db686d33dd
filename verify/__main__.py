import gc
import sys

from .cli import main

# torch and the package are imported: their ~10^5 long-lived objects are frozen, so that neither the
# run's collections nor the interpreter's last ones at exit traverse them again (~0.2 s of the main
# command's exit, with torch loaded). Frozen objects are still released when the modules are.
gc.freeze()
sys.exit(main())
