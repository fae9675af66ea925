"""coi-ledger: chain-of-identity and chain-of-custody ledger for autologous cell therapy."""
