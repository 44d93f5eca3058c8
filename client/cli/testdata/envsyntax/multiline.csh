setenv CERT '-----BEGIN CERTIFICATE-----\
MIIB\
-----END CERTIFICATE-----\
'
setenv CRLF 'line1\
line2'
setenv MIXED 'it'\''s "$x"\
`y` \ \!z\
'
setenv NEWLINEBS 'a\\
b'
setenv TRAILING 'ends with a backslash\'
