"""The browser UI: server-rendered pages, their static files and their translations."""
