"""Corrections of issued invoices (DESIGN.md section 6: corrected, never edited): credit notes
through Stripe's Credit Notes API, and void and reissue as a new revision of the month's
invoice. Each is idempotent (a repeat of the same request changes nothing), safe under
concurrent clicks and crashes between steps, and audited."""
