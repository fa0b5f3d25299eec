"""A built-in fake of the Glance v2 image-tag API, for the tests, ``bulktag demo`` and
``bulktag serve-fake``."""
