# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The options of _module/args.py LAYOUT_ARG_SPEC: which SDK generation reads what a module writes.
    DOCUMENTATION = r'''
options:
  layout:
    description:
      - Which SDK generation reads the result.
      - V(hub) is C(<cache_dir>/hub/<owner>/<escaped name>) with metadata, read by SDK 1.15 to 1.22.
      - V(models) is C(<cache_dir>/models/<owner>/<escaped name>) with metadata, read by SDK 1.23 to 1.37 and
        reused by SDK 1.38 and later.
      - V(snapshots) is C(<cache_dir>/models/<owner>--<name>/snapshots/<revision>), read by SDK 1.38 and later.
      - V(all) is the V(models) directory plus a relative link C(hub/<owner>/<escaped name>) to it, read by
        every SDK from 1.15 on.
      - V(auto) looks for the SDK in the interpreters of O(sdk_pythons) and the module's own, and picks the
        layout they read; V(all) when they disagree or none has the SDK.
      - Escaping replaces each C(.) in the repo name with C(___), as those SDKs do.
    type: str
    default: auto
    choices: [hub, models, snapshots, all, auto]
  sdk_pythons:
    description:
      - Python interpreters of the serving stack (for example a vLLM virtualenv) to look for the C(modelscope)
        SDK in when O(layout=auto).
    type: list
    elements: path
    default: []
'''
