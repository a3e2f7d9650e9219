# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The options of _module/args.py HUB_ARG_SPEC but its TRANSFER_ARG_SPEC part (doc fragment modelseed.fleet.transfer).
    DOCUMENTATION = r'''
options:
  endpoint:
    description:
      - Hub URL. Defaults to C(MODELSCOPE_ENDPOINT), else C(https://) plus C(MODELSCOPE_DOMAIN), else
        C(https://www.modelscope.cn).
    type: str
  token:
    description:
      - ModelScope access token for private models.
      - If not set, the environment variable C(MODELSCOPE_API_TOKEN) of the module is used.
      - Sent only to the hub, never to the storage it redirects downloads to.
    type: str
  validate_certs:
    description:
      - Verify TLS certificates. Turning this off is never done silently by the module; when false, every run warns.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA certificates to trust for the hub, for an internal mirror.
    type: path
'''
