"""Identities: the fleet and service certificate authorities, vehicle and
service certificates, and where they live on disk.
"""
