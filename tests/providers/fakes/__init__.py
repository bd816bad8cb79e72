"""Local servers that speak each vendor's real wire format (one module per vendor), on ephemeral ports."""
