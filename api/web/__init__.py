"""The browser side of Fleet: the control room, device pages and the crews' tablet view."""
