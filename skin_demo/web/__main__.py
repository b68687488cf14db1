import sys

from skin_demo.web.build import main

sys.exit(main())
