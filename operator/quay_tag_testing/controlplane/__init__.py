"""A local etcd and kube-apiserver for tests and the demo, built from controlplane/go.mod.

Import from the submodules: ``server.ControlPlane``, ``build.ensure_binaries`` and
``certs.CertificateAuthority``. This module imports nothing, so that
``python -m quay_tag_testing.controlplane.build`` runs without importing the module twice.
"""
