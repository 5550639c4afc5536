"""Operations: logging, metrics, systemd notification, device expiry, the doctor checks and the
files that ship with pnbridge."""
