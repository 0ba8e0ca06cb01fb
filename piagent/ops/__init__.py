"""Operations: metrics, readiness, warm-up, logging, the request trace."""
