"""Page data: one module per dashboard page. pandas and plotly live here and nowhere else
in billing_core."""
