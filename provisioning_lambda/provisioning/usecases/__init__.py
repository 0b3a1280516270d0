"""One module per thing a principal can ask for: provision a device, renew its certificate,
manage the fleet (list, transfer, claim, release), load the allowlist, watch expiry."""
