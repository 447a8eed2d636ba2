"""Document-level steps after the selector: abbreviations made consistent, entities linked to ids."""
