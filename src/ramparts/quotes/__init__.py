"""The vendor-quote app: Buyers request quotes, Sellers answer them, Finance collects deposits."""
