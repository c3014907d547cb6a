"""The bus keeper (``runa daemon splinter``): creates the buses, reaps, keeps stats."""
