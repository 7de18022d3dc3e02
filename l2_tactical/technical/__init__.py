"""Technical analysis and the feature catalogue behind :mod:`l2_tactical.data.features`.

Modules (import them directly; this package imports nothing on purpose):

* ``indicators`` - batch indicators (TA-Lib, plus vectorised realised vol, z-score,
  rolling correlation, returns, rolling windows)
* ``streaming`` - one-bar-at-a-time twins of the TA-Lib indicators (same numbers)
* ``patterns`` - TA-Lib candlestick patterns, batch and on a bounded window
* ``support_resistance`` - swing-point levels, nearest levels, volume-confirmed breakouts
* ``multi_timeframe`` - weighted direction consensus across timeframes
* ``signals`` - TECHNICAL and PATTERN TacticalSignal sources
* ``feature_spec``, ``feature_kinds``, ``kinds_*``, ``bars``, ``feature_updater``,
  ``presets`` - the FeatureSet machinery
"""
