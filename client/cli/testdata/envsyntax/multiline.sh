export CERT='-----BEGIN CERTIFICATE-----
MIIB
-----END CERTIFICATE-----
'
export CRLF='line1
line2'
export MIXED='it'\''s "$x"
`y` \ !z
'
export NEWLINEBS='a\
b'
export TRAILING='ends with a backslash\'
