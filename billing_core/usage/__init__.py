"""Usage: import of usage records, totals and overage against plan limits, month-end
projections and alerts."""
