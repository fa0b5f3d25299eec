from bulktag.cli import entry_point

entry_point()
