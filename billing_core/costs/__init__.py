"""AWS costs: the Cost Explorer adapter, cost snapshots and their refresh, attribution
of spend to customers, and the costs report.

Attribution (attribution.py) loses nothing: a shared service first, then a matching tag
value, then a shared account, then the one owner of the line's linked account (untagged
spend, and AWS tax and credits, which AWS never tags), else unattributed. Unattributed and
shared spend form the shared pool that invoicing splits (invoicing/shared_costs.py)."""
