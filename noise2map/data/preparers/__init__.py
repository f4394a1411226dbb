"""One preparer per data set, one file each; what they share is in :mod:`.common`.

:mod:`noise2map.data.prepare` holds the registry of preparers and builds each store beside the
old one before swapping it in.
"""
