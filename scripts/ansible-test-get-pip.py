"""Stands in for get-pip.py (its host is unreachable here): pip from Python's own ensurepip,
then `pip install` of what ansible-test asked for from the package index, verified with the
system's CA bundle (ansible-test hides pip's config; the pip it installs uses the system's
trust store). get-pip's own options (--no-setuptools, --no-wheel) are left out."""

import ensurepip
import os
import ssl
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
bundles = ["/etc/ssl/certs/ca-certificates.crt", ssl.get_default_verify_paths().openssl_cafile]
cert = next((["--cert", b] for b in bundles if b and os.path.exists(b)), [])
subprocess.check_call([sys.executable, "-m", "pip", "install", "--upgrade", *cert, *args])
