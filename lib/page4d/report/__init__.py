"""What a person reads: figures and the widget viewer (`viz`), metric tables (`tables`)."""
