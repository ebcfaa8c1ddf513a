"""trtq runtime: reads and runs artifacts. It never imports `builder`, so a serving box needs only this package."""
