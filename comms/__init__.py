"""Messages between actors (and, later, their transport); no market or grid maths."""
