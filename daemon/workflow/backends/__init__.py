"""Where a job's strategy data comes from: the embedded numpy path (default) or HeavyDB.

Modules: :mod:`.base` (the ``StrategySource`` interface and ``InputSpec``), :mod:`.selection`
(which backend a job gets), :mod:`.numpy_backend`, :mod:`.heavydb` and its helpers. This
package's ``__init__`` imports nothing, so loading the config (which needs
:mod:`.heavydb_config`) does not pull in the workflow's output and chart modules; ``heavyai``
itself is imported only when a connection is opened.
"""
