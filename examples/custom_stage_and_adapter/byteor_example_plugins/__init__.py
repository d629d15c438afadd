"""Example ByteOr plugins, registered by entry points (see ``pyproject.toml``):

* ``adapter = "sqlite"`` — :class:`~byteor_example_plugins.sqlite.SqliteAdapter`: a table of
  an SQLite database file as a source (rows in id order after a cursor, at least once) or as
  a sink (rows appended, one transaction per batch);
* ``op = "mask_card"`` — :class:`~byteor_example_plugins.ops.MaskCard`: a stage that masks
  the card number of each JSON record but for its last digits.

Nothing here is imported until a pipeline names it: ByteOr lists entry points without
loading them.
"""
