"""Exchange rates: the USD->currency rate of each month (`set-rate`), loaded and applied
in one place."""
