# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The options of _module/args.py TRANSFER_ARG_SPEC: how long the modules that make HTTP requests wait, and how often they retry.
    DOCUMENTATION = r'''
options:
  timeout:
    description:
      - Seconds to wait for a connection or for data before a retry.
    type: float
    default: 60.0
  retries:
    description:
      - How many times to retry a request that failed with 429, 5xx or a connection error.
      - A download that breaks off resumes where it stopped; every failure of one download counts against the
        same O(retries).
    type: int
    default: 5
  retry_delay:
    description:
      - Seconds to wait before the first retry. The wait doubles with each further retry of the same request or
        download, up to 30 seconds, and each wait is a random half to all of that, so that nodes that failed
        together do not come back together.
      - A C(Retry-After) the server sends is waited for instead.
      - V(0) retries at once, for a mirror on the same network or for tests.
    type: float
    default: 1.0
'''
