# Copyright: meso-agentless contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


class ModuleDocFragment:
    """The options every meso.agentless module shares: where the controller is, its token."""

    DOCUMENTATION = r"""
options:
  controller:
    description:
      - The controller's API, C(http://HOST:PORT) or C(https://HOST:PORT) (C(meso controller
        --listen)).
      - If not set, the environment variable E(MESO_ADDR) is used.
    type: str
    required: true
  token:
    description:
      - The API's bearer token (the controller writes it to its C(--token-file) at first start).
      - If neither O(token) nor O(token_file) is set, E(MESO_TOKEN) is used, then the file named
        by E(MESO_TOKEN_FILE).
    type: str
  token_file:
    description:
      - A file holding the token, read on the host the module runs on.
    type: path
  validate_certs:
    description:
      - Verify the controller's TLS certificate (against the system's CAs, or O(ca_path)).
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to verify the controller's certificate with.
    type: path
  request_timeout:
    description:
      - Seconds to wait for each answer of the controller.
    type: float
    default: 30
notes:
  - The module talks HTTP to the controller with Ansible's own URL helpers; nothing is installed
    where it runs. Run it on localhost or on the controller's host.
"""

    # for modules that only read: meso.agentless.controller.info_module
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    description: It only reads.
  diff_mode:
    support: none
    description: It changes nothing.
"""
