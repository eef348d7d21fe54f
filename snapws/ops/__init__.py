"""Operations: one function per user-visible verb. They return values or
raise :class:`snapws.errors.SnapwsError`; they never print or exit."""
