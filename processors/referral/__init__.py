"""The referral programme (README "Referral programme"): ``decide`` holds the rules and
guards, ``record`` the per-customer record and its wire form, ``layer`` the layer."""
