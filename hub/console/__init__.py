"""The ops console: server-rendered pages (Jinja2 and htmx) for people watching many stores, live over SSE.

``templating`` renders pages in the reader's language (``i18n``); ``assets`` serves the scripts and styles shipped
in the package; each page is a module of its own with its router.
"""
