"""Suite-wide setup: the folder of this file is on ``sys.path`` (pytest's default import mode
puts a rootless conftest's folder there), so test modules share helpers such as
``plugin_install`` by plain import."""
