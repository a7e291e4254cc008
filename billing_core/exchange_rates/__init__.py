"""Exchange rates: the USD->currency rate of each month, recorded with `set-rate` and loaded
(`rates`), and the one converter every amount goes through (`convert`, pure)."""
