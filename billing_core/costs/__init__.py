"""AWS costs: the Cost Explorer adapter, cost snapshots and their refresh, attribution
of spend to customers, and the costs report."""
